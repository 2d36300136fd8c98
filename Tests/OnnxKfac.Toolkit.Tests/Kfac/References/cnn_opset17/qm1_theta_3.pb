B
conv2.biasJ 
Mó<´ZØ»aÖœ<İ€U<U3¾¼'z>ñ†O>Ûö½