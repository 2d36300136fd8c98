B
conv1.biasJ[ео╫Р┤╗╩еL┘>╠лЁ>