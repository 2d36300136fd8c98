B(encoder.layers.encoder_layer_0.ln_2.biasJ@6
á»Â<¬gY»€º;â»ØŒ£;Ð¸:L¡f<2PÜ;ˆ<˜P0¼=<®»Z÷Š¼`»<Òâ »~™»