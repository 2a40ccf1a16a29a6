package specdec

import "math"

// fexp is exp for float32 arguments: range reduction by ln 2, then a
// degree-6 polynomial in Estrin form (short dependency chains, so a loop
// over the vocabulary overlaps iterations). Relative error is about
// 1e-7·(1+|x|) (one float32 ln 2 in the reduction; fine for probabilities,
// which at x = -87 are below 1e-37 anyway). It is the inner loop of softmax over 150k-token
// vocabularies, where math.Exp (float64) costs several times more.
// Arguments below -87.3 (including -Inf) give 0; above 87.3, +Inf.
func fexp(x float32) float32 {
	switch {
	case x < -87.3:
		return 0
	case x > 87.3:
		return float32(math.Inf(1))
	case x > 0:
		return 1 / expNeg(-x)
	}
	return expNeg(x)
}

// expNeg is exp for x in [-87.3, 0], small enough to inline into the
// vocabulary loops.
func expNeg(x float32) float32 {
	n := int32(x*1.44269504088896341 - 0.5) // round to nearest for x <= 0
	r := x - float32(n)*0.6931472
	r2 := r * r
	p := (1 + r) + r2*(0.5+r*(1.0/6)) + r2*r2*((1.0/24+r*(1.0/120))+r2*(1.0/720))
	return p * math.Float32frombits(uint32(n+127)<<23)
}

// expLow is fexp for x <= 0, inlinable.
func expLow(x float32) float32 {
	if x < -87.3 {
		return 0
	}
	return expNeg(x)
}
