B
query.biasJ "IN¼ÞÊ<Åy5<oÙŠ¼Cœ\½-˜Ü¼q^:Fï–<