B
lnf.weightJ@¨lt?DÑ„¿t`$¿	¿Uj:½§7?õÝð¾$]Àú?!>Êô´?RHY?Â(¿Pñ¿ÛSr>F¥b?