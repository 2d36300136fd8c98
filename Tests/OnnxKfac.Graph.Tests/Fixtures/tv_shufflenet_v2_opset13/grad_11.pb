Bstage2.0.branch2.1.biasJ ¡[48Ìi¦8c¿Z¹¾f8vå±8á£7zX8=§
¹