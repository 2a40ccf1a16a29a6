package loadgen

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgpdf"
	"gonum.org/v1/plot/vg/vgsvg"
)

// PlotConcurrency draws output throughput and p50/p99 latencies (end to end
// and TTFT) against concurrency, one panel each, into path (.svg, .png or
// .pdf). Points need at least two concurrencies.
func PlotConcurrency(path, title string, points []Point) error {
	if len(points) < 2 {
		return errors.New("plot: need at least two concurrencies")
	}
	thr := plot.New()
	thr.Title.Text = title
	thr.X.Label.Text = "concurrency"
	thr.Y.Label.Text = "output tokens/s"
	lat := plot.New()
	lat.X.Label.Text = "concurrency"
	lat.Y.Label.Text = "latency (ms)"
	var tps, rps, e50, e99, t50, t99 plotter.XYs
	var ticks []plot.Tick
	for _, p := range points {
		x := float64(p.Concurrency)
		s := p.Summary
		tps = append(tps, plotter.XY{X: x, Y: s.OutputThroughput})
		rps = append(rps, plotter.XY{X: x, Y: s.RequestThroughput})
		e50 = append(e50, plotter.XY{X: x, Y: s.E2EL.P50})
		e99 = append(e99, plotter.XY{X: x, Y: s.E2EL.P99})
		t50 = append(t50, plotter.XY{X: x, Y: s.TTFT.P50})
		t99 = append(t99, plotter.XY{X: x, Y: s.TTFT.P99})
		ticks = append(ticks, plot.Tick{Value: x, Label: strconv.Itoa(p.Concurrency)})
	}
	if err := plotutil.AddLinePoints(thr, "output tok/s", tps); err != nil {
		return err
	}
	if err := plotutil.AddLinePoints(lat, "E2E p50", e50, "E2E p99", e99, "TTFT p50", t50, "TTFT p99", t99); err != nil {
		return err
	}
	for _, p := range []*plot.Plot{thr, lat} {
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.Y.Min = 0
		p.Legend.Top = true
		p.Legend.Left = true
		p.Add(plotter.NewGrid())
	}
	return saveTiles(path, []*plot.Plot{thr, lat})
}

// PlotSweep draws a k sweep: measured acceptance rate and mean accepted
// length against k (with the fitted α and the expected length E(k)), and
// measured output tokens/s against the Leviathan prediction
// base·E/(k·c+1).
func PlotSweep(path, title string, fit SweepFit) error {
	if len(fit.Curve) < 2 {
		return errors.New("plot: need at least two values of k")
	}
	acc := plot.New()
	acc.Title.Text = fmt.Sprintf("%s  (fitted α = %.3f, c = %.3g)", title, fit.Alpha, fit.DraftCost)
	acc.X.Label.Text = "k (draft tokens per step)"
	acc.Y.Label.Text = "acceptance rate"
	lenp := plot.New()
	lenp.X.Label.Text = "k"
	lenp.Y.Label.Text = "tokens per target pass"
	spd := plot.New()
	spd.X.Label.Text = "k"
	spd.Y.Label.Text = "output tokens/s"
	var rate, alpha, mlen, elen, tps, pred plotter.XYs
	var ticks []plot.Tick
	for _, c := range fit.Curve {
		x := float64(c.K)
		ticks = append(ticks, plot.Tick{Value: x, Label: strconv.Itoa(c.K)})
		if c.K > 0 {
			rate = append(rate, plotter.XY{X: x, Y: c.AcceptanceRate})
			alpha = append(alpha, plotter.XY{X: x, Y: fit.Alpha})
		}
		mlen = append(mlen, plotter.XY{X: x, Y: c.MeanLength})
		elen = append(elen, plotter.XY{X: x, Y: c.ExpectedLength})
		tps = append(tps, plotter.XY{X: x, Y: c.OutputTPS})
		if fit.BaseTPS > 0 {
			pred = append(pred, plotter.XY{X: x, Y: fit.BaseTPS * c.PredictedSpeedup})
		}
	}
	if len(rate) > 0 {
		if err := plotutil.AddLinePoints(acc, "accepted/proposed", rate, "fitted α", alpha); err != nil {
			return err
		}
	}
	if err := plotutil.AddLinePoints(lenp, "measured", mlen, "E(k) = (1-α^(k+1))/(1-α)", elen); err != nil {
		return err
	}
	if err := plotutil.AddLinePoints(spd, "measured", tps); err != nil {
		return err
	}
	if len(pred) > 0 {
		// The model as a smooth curve over real k, with the integer points.
		base, a, c := fit.BaseTPS, fit.Alpha, fit.DraftCost
		f := plotter.NewFunction(func(k float64) float64 {
			if a >= 1 {
				return base * (k + 1) / (k*c + 1)
			}
			return base * (1 - math.Pow(a, k+1)) / (1 - a) / (k*c + 1)
		})
		f.Color = color.RGBA{R: 200, A: 255}
		f.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		f.XMin, f.XMax = float64(fit.Curve[0].K), float64(fit.Curve[len(fit.Curve)-1].K)
		spd.Add(f)
		spd.Legend.Add("Leviathan base·E/(k·c+1)", f)
		// A Function has no data range: make room for it explicitly.
		top := 0.0
		for i := range pred {
			top = max(top, pred[i].Y, tps[i].Y)
		}
		spd.Y.Max = top * 1.05
	}
	for _, p := range []*plot.Plot{acc, lenp, spd} {
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.Y.Min = 0
		p.Legend.Top = true
		p.Legend.Left = true
		p.Add(plotter.NewGrid())
	}
	acc.Y.Max = 1
	acc.X.Min = float64(fit.Curve[0].K)
	spd.Legend.Top, spd.Legend.Left = false, false // the curve rises through the top-left corner
	return saveTiles(path, []*plot.Plot{acc, lenp, spd})
}

// canvasWriter is what saveTiles needs of a vector or raster canvas.
type canvasWriter interface {
	vg.CanvasSizer
	io.WriterTo
}

// saveTiles stacks plots vertically on one canvas whose format follows the
// file's extension.
func saveTiles(path string, plots []*plot.Plot) error {
	w, h := 8*vg.Inch, vg.Length(len(plots))*3.2*vg.Inch
	var c canvasWriter
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".svg":
		c = vgsvg.New(w, h)
	case ".png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110), vgimg.UseBackgroundColor(color.White))}
	case ".pdf":
		c = vgpdf.New(w, h)
	default:
		return fmt.Errorf("plot: unknown format %q (use .svg, .png or .pdf)", ext)
	}
	rows := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		rows[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canv := plot.Align(rows, tiles, draw.New(c))
	for i, p := range plots {
		p.Draw(canv[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
