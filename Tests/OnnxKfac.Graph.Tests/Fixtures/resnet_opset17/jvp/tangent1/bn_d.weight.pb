Bbn_d.weightJ Þช>ฟ!A?ค]ฬพEื…?P๑ฝไวร>ü๔
พ`Joพ