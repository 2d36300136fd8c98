B	enc2.biasJ1F½²n•¿g”u¿a+
?