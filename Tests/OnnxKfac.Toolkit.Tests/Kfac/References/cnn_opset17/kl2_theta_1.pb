B
conv1.biasJ_Ì½4¨,¼uÓ‡>4´>