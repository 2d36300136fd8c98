B
conv1.biasJñ)?k]¿F(¿^¿