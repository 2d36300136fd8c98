B
conv1.biasJ­ 9»sÃ<Wò¼J: