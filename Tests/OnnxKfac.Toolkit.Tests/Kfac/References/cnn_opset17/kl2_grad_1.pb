B
kl2_grad_1J'¼ˆ9r<õ¢È¼v¶»