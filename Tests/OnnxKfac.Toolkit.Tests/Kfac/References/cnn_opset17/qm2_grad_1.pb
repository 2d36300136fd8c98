B
qm2_grad_1JıN ¼“ºN:§|½W†2½