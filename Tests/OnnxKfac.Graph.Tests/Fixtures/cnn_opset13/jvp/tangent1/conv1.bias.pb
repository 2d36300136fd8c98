B
conv1.biasJrü¿ÔÇó>¯Ãò>°E£¿