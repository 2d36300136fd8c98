B
conv1.biasJγηk½†¶½ΝΑ>fBΡ>