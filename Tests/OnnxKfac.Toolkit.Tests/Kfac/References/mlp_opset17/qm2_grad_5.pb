B
qm2_grad_5Jy¦¾UC§<Iƒa=9šØ<*°c>