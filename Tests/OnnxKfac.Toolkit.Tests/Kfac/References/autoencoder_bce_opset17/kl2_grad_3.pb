B
kl2_grad_3JcÍ6¹Û:_Ë‡¸IŸÓ9