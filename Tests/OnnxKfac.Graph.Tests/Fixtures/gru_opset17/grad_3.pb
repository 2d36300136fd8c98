Bfc.biasJ
¾]z¾2Â>