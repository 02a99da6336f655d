package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// This file is the think-turn scenario: Think agents with the scripted
// model (no network) run turns of one tool round each — the model calls a
// tool, then answers — and the bench measures each turn from the submit
// to the moment its end is durable.

const thinkerClass = "BenchThinker"

// thinker is think-turn's class.
type thinker struct {
	think.Agent[struct{}]
}

type lookupArgs struct {
	Q string `json:"q"`
}

// thinkModel is the scripted model of every turn: a call of lookup when
// the last message is not a tool result, else the answer.
func thinkModel() *scripted.Model {
	return toolLoopModel(scripted.Call("lookup", `{"q":"x"}`), scripted.Say("done"))
}

// toolLoopModel answers every turn with call until the last message is a
// tool result, then with answer: two model steps a turn, for any number
// of turns.
func toolLoopModel(call, answer scripted.Turn) *scripted.Model {
	m := scripted.New(scripted.Turn{Respond: func(req model.Request) scripted.Turn {
		if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == model.RoleTool {
			return answer
		}
		return call
	}})
	m.Loop = true
	return m
}

// doneWatcher wraps a store and reports each FinishSubmission that
// returned without error — the turn's end is durable — on the channel the
// bench registered for the submission id. It adds a map lookup and a
// channel send to the runner's path, nothing that touches the store.
type doneWatcher struct {
	store.Store
	mu    sync.Mutex
	waits map[string]chan store.SubmissionStatus
}

func (w *doneWatcher) expect(id string) chan store.SubmissionStatus {
	ch := make(chan store.SubmissionStatus, 1)
	w.mu.Lock()
	w.waits[id] = ch
	w.mu.Unlock()
	return ch
}

func (w *doneWatcher) FinishSubmission(ctx context.Context, key store.AgentKey, id, owner string, status store.SubmissionStatus, errMsg string, output []byte, usage store.Usage, now time.Time) error {
	err := w.Store.FinishSubmission(ctx, key, id, owner, status, errMsg, output, usage, now)
	if err == nil {
		w.mu.Lock()
		ch := w.waits[id]
		delete(w.waits, id)
		w.mu.Unlock()
		if ch != nil {
			ch <- status
		}
	}
	return err
}

// thinkTurn runs ThinkSubmissions turns on ThinkAgents agents, one worker
// per agent, each submitting its next turn when the previous one is done.
func (r *runner) thinkTurn(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()
	w := &doneWatcher{Store: e.st, waits: map[string]chan store.SubmissionStatus{}}
	eng, err := r.newEngine(w, workflow.Hooks{})
	if err != nil {
		return nil, err
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: r.log, IdleTimeout: time.Hour})
	if err != nil {
		return nil, err
	}
	lookup, err := think.NewTool("lookup", "Looks something up",
		func(_ context.Context, a lookupArgs) (map[string]string, error) {
			return map[string]string{"q": a.Q, "a": "42"}, nil
		})
	if err != nil {
		return nil, err
	}
	if err := think.Register[thinker](rt, thinkerClass, think.Options{Model: thinkModel(), System: "You look things up.", Tools: []think.Tool{lookup}}); err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stopEngine(eng)) }()
	if err := rt.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = errors.Join(err, rt.Stop(sctx))
	}()

	// turn submits one turn to agent name and waits until its end is durable.
	turn := func(ctx context.Context, name, id string) (submitted, done time.Duration, err error) {
		ch := w.expect(id)
		start := time.Now()
		_, err = agent.With(ctx, rt, name, func(ctx context.Context, a *thinker) (think.SubmitResult, error) {
			return a.SubmitMessages(ctx, []model.Message{{Role: model.RoleUser, Content: "look up x"}}, think.SubmitOptions{SubmissionID: id})
		})
		if err != nil {
			return 0, 0, fmt.Errorf("submit %s to %s: %w", id, name, err)
		}
		submitted = time.Since(start)
		select {
		case st := <-ch:
			if st != store.SubmissionCompleted {
				sub, _ := e.st.GetSubmission(ctx, store.AgentKey{Class: thinkerClass, Name: name}, id)
				msg := ""
				if sub != nil {
					msg = sub.Error
				}
				return 0, 0, fmt.Errorf("submission %s of %s ended %s: %s", id, name, st, msg)
			}
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("waiting for submission %s of %s: %w", id, name, ctx.Err())
		}
		return submitted, time.Since(start), nil
	}

	agents := min(cfg.ThinkAgents, cfg.ThinkSubmissions)
	// Warm up: one turn per agent activates it (not measured).
	for i := range agents {
		if _, _, err := turn(ctx, "t"+strconv.Itoa(i), "warm"+strconv.Itoa(i)); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	r.progress("%d agents warm; %d turns (one tool round each), one at a time per agent", agents, cfg.ThinkSubmissions)

	lat := make([]float64, cfg.ThinkSubmissions)
	sub := make([]float64, cfg.ThinkSubmissions)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for a := range agents {
		name := "t" + strconv.Itoa(a)
		wg.Go(func() {
			// Agent a runs turns a, a+agents, a+2·agents, …
			for i := a; i < cfg.ThinkSubmissions; i += agents {
				s, d, err := turn(ctx, name, "s"+strconv.Itoa(i))
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				sub[i], lat[i] = ms(s), ms(d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return nil, firstErr
	}
	// Each turn left four messages: user, assistant (call), tool, assistant.
	want := 4 * (cfg.ThinkSubmissions + agents)
	if n, err := e.count(ctx, `SELECT COUNT(*) FROM think_conversation`); err != nil {
		return nil, err
	} else if n != want {
		return nil, fmt.Errorf("the conversations hold %d messages, want %d", n, want)
	}
	r.progress("%d turns in %s", cfg.ThinkSubmissions, elapsed.Round(time.Millisecond))
	slices.Sort(lat)
	slices.Sort(sub)
	return []Result{
		metric("submit_to_done_p50_ms", percentileSorted(lat, 50), "ms"),
		metric("submit_to_done_p99_ms", percentileSorted(lat, 99), "ms"),
		metric("submit_p50_ms", percentileSorted(sub, 50), "ms"),
		metric("turns_per_s", float64(cfg.ThinkSubmissions)/elapsed.Seconds(), "turns/s"),
	}, nil
}
