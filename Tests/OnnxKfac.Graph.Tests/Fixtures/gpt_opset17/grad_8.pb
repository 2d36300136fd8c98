Bblocks.0.norm1.weightJ@MÙÁ=£÷á½L6ª;z1/=M ™¼ÄØ<Ì~š¾L
”¼ÔÖĞ<a¼{²Å¼BKÀ¾ó£Ë½·³è½f?=p}=