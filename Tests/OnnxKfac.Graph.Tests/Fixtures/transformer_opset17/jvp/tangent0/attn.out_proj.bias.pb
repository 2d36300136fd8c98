Battn.out_proj.biasJ@ÝèÄ=oHC?á®¥¿¢Ùºÿø¹¿ÐÔ“¿LUz¿ª¸ƒ¿Y¿»GÉ>Ä
I¿{r¿³?½w¿ß©>‰ž¿