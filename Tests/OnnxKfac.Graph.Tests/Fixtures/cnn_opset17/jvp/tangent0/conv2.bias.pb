B
conv2.biasJ ä6Ú¾hÄ¾\¼D?|*?-v¿v³Ó>óvÝ>£@K¿