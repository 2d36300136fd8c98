Bstage2.0.branch1.1.biasJ „Ÿº‡Kº|GU:p:
w9ºd§ºØLx¹k: