Bclassifier.2.biasJ•¾ÁD•¾T
;>£Îi>”Ð/>