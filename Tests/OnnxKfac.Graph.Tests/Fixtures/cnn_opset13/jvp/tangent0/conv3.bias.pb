B
conv3.biasJ 2f¡¾Üi‡?íNÓ;†è>“L:?£¿>m©?'Û¿