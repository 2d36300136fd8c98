B
qm2_grad_3J·À 7Yb:OÎ∑π»]∫9