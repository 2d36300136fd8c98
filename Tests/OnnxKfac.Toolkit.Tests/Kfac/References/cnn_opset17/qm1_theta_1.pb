B
conv1.biasJŸ³½B(Ú½˜J™>Üˆ²>