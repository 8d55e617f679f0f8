package broken

func Thing() int { return 1 }
