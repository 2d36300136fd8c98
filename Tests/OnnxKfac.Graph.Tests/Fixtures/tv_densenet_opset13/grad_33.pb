Bclassifier.biasJY{^>0²”>4,s>
×P=lÐK¿