B
conv1.biasJ8–їР4>Ѕmо¤?vпp>