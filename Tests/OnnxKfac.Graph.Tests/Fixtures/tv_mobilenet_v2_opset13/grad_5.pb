Bfeatures.1.conv.0.1.biasJ@Q¢B¹ZVºC×¸¹79„:‰K~¸šÕ·ud8º
˜/8€&;n.n7¼OÑ¸|àPº«*‚9ãš»ï ³¸íü°: