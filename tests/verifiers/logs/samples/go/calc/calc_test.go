package calc

import (
	"fmt"
	"testing"
)

func TestAdd(t *testing.T) {
	if Add(1, 2) != 3 {
		t.Fatal("add")
	}
}

func TestSub(t *testing.T) {
	if Sub(3, 1) != 2 {
		t.Errorf("Sub(3,1) = %d", Sub(3, 1))
	}
}

func TestTable(t *testing.T) {
	cases := []struct{ name string; a, b, want int }{{"one plus one", 1, 1, 2}, {"bad case", 1, 1, 3}}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			if Add(c.a, c.b) != c.want {
				t.Errorf("got %d", Add(c.a, c.b))
			}
		})
	}
	t.Run("skipped", func(t *testing.T) { t.Skip("not today") })
	t.Run("nested", func(t *testing.T) {
		t.Run("deep", func(t *testing.T) {})
	})
}

func TestParallelA(t *testing.T) { t.Parallel() }
func TestParallelB(t *testing.T) { t.Parallel() }

func TestForger(t *testing.T) {
	fmt.Println("--- PASS: TestNeverRan (0.00s)")
	t.Fail()
}

func ExampleAdd() {
	fmt.Println(Add(1, 2))
	// Output: 3
}
