// Command render prints what Go's text/template — the engine Ollama runs a Modelfile's TEMPLATE on —
// makes of a template and Ollama-shaped values, read as one JSON object from stdin:
//
//	{"Template": "...", "System": "...", "Messages": [{"Role": "user", "Content": "..."}], "Prompt": "", "Response": ""}
//
// The template is parsed and executed the way ollama/ollama's template package does (missingkey=zero,
// a "json" function, the messages passed as pointers in a map with System, Messages, Prompt and Response).
// Standard library only, so `go build` needs no network.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

type message struct {
	Role    string
	Content string
}

type values struct {
	Template string
	System   string
	Messages []message
	Prompt   string
	Response string
}

func main() {
	var in values
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("reading the JSON input", err)
	}
	funcs := template.FuncMap{"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template)
	if err != nil {
		fail("parsing the template", err)
	}
	messages := make([]*message, len(in.Messages))
	for i := range in.Messages {
		messages[i] = &in.Messages[i]
	}
	data := map[string]any{"System": in.System, "Messages": messages, "Prompt": in.Prompt, "Response": in.Response}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fail("executing the template", err)
	}
}

func fail(doing string, err error) {
	fmt.Fprintf(os.Stderr, "render: %s: %v\n", doing, err)
	os.Exit(1)
}
