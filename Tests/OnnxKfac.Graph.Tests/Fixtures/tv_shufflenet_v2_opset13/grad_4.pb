Bstage2.0.branch1.1.weightJ P­…9Ž¹¹s‘Ü¹)
¸z{:RË9Â·X¸9ü¹