Bfeatures.4.conv.3.weightJ@Y4;
À<šôj=è½„¾ˆº÷ga:M}:˜¨È=#4B¼KÎhºu1=·Ã;ŠÉ¼Äß
¾Ì¢ª½Ô½