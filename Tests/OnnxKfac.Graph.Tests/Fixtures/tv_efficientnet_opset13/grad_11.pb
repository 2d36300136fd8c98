Bfeatures.1.0.block.2.1.weightJ Hc:¸Õ„Õ¸åu·¯BÉ¸ƒ˜¹
¿J¹"Í9»i7