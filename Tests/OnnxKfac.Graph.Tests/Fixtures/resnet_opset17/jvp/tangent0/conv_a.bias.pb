Bconv_a.biasJ õaµø"ø w
?i∆$>ﬁü™>Ó»zøß*ì?"∂Ö?