B
conv2.biasJ S ¾<iØ:qê/=7Ð„<X¾~z{>QÇS>†&á½