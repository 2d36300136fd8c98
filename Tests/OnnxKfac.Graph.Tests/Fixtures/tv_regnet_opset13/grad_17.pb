B)trunk_output.block1.block1-0.f.c.1.weightJ C,95¼‚9«$39µ®:T
:U%E8­O€º™å: