B	bn_a.biasJ ◊fº∫∫¢oº-w[:1˜°ª>>ªIRá;Êv÷ªd
f: