Bfc3.biasJ].B=:˜b½¡Ô
>O­¾,™×<