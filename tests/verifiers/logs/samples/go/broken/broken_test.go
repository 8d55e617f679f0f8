package broken

import "testing"

func TestThing(t *testing.T) {
	if NotDefined() != 1 {
		t.Fatal()
	}
}
