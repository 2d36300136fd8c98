B
s1_grad_14J)L@½k?‰> s¾Ÿ“’½