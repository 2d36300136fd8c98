Blayers.7.biasJ ЄямЈOО;ґXЭЈ$
9д}єH'В9э;G9 ЈЮє