B	kl1_buf_1J £w™ºÉŽ
»Š]m9'ij¹ló9ÕÃ.»<ó®ºdd: