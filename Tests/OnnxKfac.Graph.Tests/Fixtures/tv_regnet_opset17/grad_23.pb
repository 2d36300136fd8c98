B)trunk_output.block2.block2-0.f.a.1.weightJ@~
F:»¸ZºI§94x9Øa”7x¥ ¹ƒæA¹
–¤¸Å0=;’Û·Ñ´Z¸2
ÿ8=Qº‹˜9&–C9Jû8