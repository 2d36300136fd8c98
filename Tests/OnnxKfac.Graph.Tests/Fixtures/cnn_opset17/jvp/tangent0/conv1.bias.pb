B
conv1.biasJ–U?mÀhH™¾¦Ô¾