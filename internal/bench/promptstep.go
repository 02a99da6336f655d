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
	"agentflow/model/scripted"
	"agentflow/store"
	"agentflow/think"
	"agentflow/workflow"
)

// This file is the prompt-step scenario: the end-to-end overhead of
// think.Prompt with the scripted model answering the final-answer call at
// once — everything but the model. Think agents start workflows with
// RunWorkflow; each workflow does one think.Prompt and notes, in memory,
// when Prompt returned; the bench measures from the RunWorkflow call to
// that moment. On the path: the submit step, the submission's insert, its
// start, apply and finish (with the outbox row), the outbox claim, the
// event, the delivered mark, the wait step.

const (
	prompterClass = "BenchPrompter"
	promptWfClass = "BenchPrompt"
	promptBinding = "BENCH_PROMPT"
)

// prompter is prompt-step's Think class.
type prompter struct {
	think.Agent[struct{}]
}

// promptAnswer is the answer type of the scenario's prompt.
type promptAnswer struct {
	OK bool `json:"ok"`
}

// promptStep runs PromptWorkflows workflows on PromptAgents agents, one
// at a time per agent, each started when the previous one's Prompt
// returned.
func (r *runner) promptStep(ctx context.Context) (_ []Result, err error) {
	cfg := r.cfg
	e, err := r.openEnv(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.cleanup()) }()
	eng, err := r.newEngine(e.st, workflow.Hooks{})
	if err != nil {
		return nil, err
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng, Logger: r.log, IdleTimeout: time.Hour})
	if err != nil {
		return nil, err
	}
	m := scripted.New(scripted.Call(think.FinalAnswerTool, `{"ok":true}`))
	m.Loop = true
	if err := think.Register[prompter](rt, prompterClass, think.Options{Model: m, System: "You answer."}); err != nil {
		return nil, err
	}

	// returned holds, per instance id, a channel told when the workflow's
	// Prompt returned (with the time, or the error).
	type done struct {
		at  time.Time
		err error
	}
	var (
		mu       sync.Mutex
		returned = map[string]chan done{}
	)
	expect := func(id string) chan done {
		mu.Lock()
		defer mu.Unlock()
		ch, ok := returned[id]
		if !ok {
			ch = make(chan done, 1)
			returned[id] = ch
		}
		return ch
	}
	workflow.MustRegister(eng, promptWfClass, workflow.Func[struct{}, bool](func(ctx context.Context, ev workflow.Event[struct{}], step *workflow.Step) (bool, error) {
		o, err := agent.OriginOf(rt, step)
		if err != nil {
			return false, err
		}
		a, err := think.Prompt[promptAnswer](o, "answer", think.PromptOptions{Prompt: "Answer.", Timeout: time.Minute})
		// Only the run that gets past the wait reaches here; a buffered
		// send that would block means a second one did.
		select {
		case expect(step.InstanceID()) <- done{time.Now(), err}:
		default:
		}
		if err != nil {
			return false, err
		}
		return a.OK, nil
	}))
	if err := rt.Bind(promptBinding, agent.Binding{Workflow: promptWfClass}); err != nil {
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

	// prompt starts one workflow through agent name and waits until its
	// Prompt returned.
	prompt := func(ctx context.Context, name string) (time.Duration, error) {
		var (
			start time.Time
			id    string
		)
		_, err := agent.With(ctx, rt, name, func(ctx context.Context, a *prompter) (struct{}, error) {
			start = time.Now()
			var err error
			id, err = a.RunWorkflow(ctx, promptBinding, struct{}{})
			return struct{}{}, err
		})
		if err != nil {
			return 0, fmt.Errorf("agent %s: RunWorkflow: %w", name, err)
		}
		select {
		case d := <-expect(id):
			if d.err != nil {
				return 0, fmt.Errorf("workflow %s: %w", id, d.err)
			}
			return d.at.Sub(start), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for the prompt of workflow %s: %w", id, ctx.Err())
		}
	}

	agents := min(cfg.PromptAgents, cfg.PromptWorkflows)
	name := func(i int) string { return "p" + strconv.Itoa(i) }
	// Warm up: one workflow per agent activates it (not measured).
	for i := range agents {
		if _, err := prompt(ctx, name(i)); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	r.progress("%d agents warm; %d workflows of one think.Prompt each, one at a time per agent", agents, cfg.PromptWorkflows)

	lat := make([]float64, cfg.PromptWorkflows)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	begin := time.Now()
	for a := range agents {
		wg.Go(func() {
			// Agent a runs workflows a, a+agents, a+2·agents, …
			for i := a; i < cfg.PromptWorkflows; i += agents {
				d, err := prompt(ctx, name(a))
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				lat[i] = ms(d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if firstErr != nil {
		return nil, firstErr
	}
	r.progress("%d prompts in %s", cfg.PromptWorkflows, elapsed.Round(time.Millisecond))

	// Every workflow completes, and every outbox message is delivered once.
	total := cfg.PromptWorkflows + agents
	if err := e.waitCount(ctx, 10*time.Millisecond, total, `SELECT COUNT(*) FROM workflow_instances WHERE status = ?`, string(store.StatusComplete)); err != nil {
		return nil, err
	}
	if err := e.waitCount(ctx, 10*time.Millisecond, total, `SELECT COUNT(*) FROM think_outbox WHERE delivered_at IS NOT NULL AND payload IS NULL`); err != nil {
		return nil, err
	}
	if n, err := e.count(ctx, `SELECT COUNT(*) FROM think_outbox`); err != nil {
		return nil, err
	} else if n != total {
		return nil, fmt.Errorf("%d outbox messages, want %d", n, total)
	}
	slices.Sort(lat)
	return []Result{
		metric("prompt_p50_ms", percentileSorted(lat, 50), "ms"),
		metric("prompt_p99_ms", percentileSorted(lat, 99), "ms"),
		metric("prompts_per_s", float64(cfg.PromptWorkflows)/elapsed.Seconds(), "prompts/s"),
	}, nil
}
