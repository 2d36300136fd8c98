B	bn_d.biasJ ›
@åf?bêÍ?Æ~ï?{~¿tp„¿'nå?ÕWe¾