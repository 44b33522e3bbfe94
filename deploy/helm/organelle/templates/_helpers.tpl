{{/* The app's name, prefix of every object. */}}
{{- define "organelle.name" -}}
{{- .Values.name | default .Release.Name -}}
{{- end -}}

{{/* A group's object name: <app>-<group>. Call with (list $ $group). */}}
{{- define "organelle.object" -}}
{{- $root := index . 0 -}}{{- $g := index . 1 -}}
{{- printf "%s-%s" (include "organelle.name" $root) $g.name -}}
{{- end -}}

{{/* The labels pods are selected by. Call with (list $ $group). */}}
{{- define "organelle.selector" -}}
{{- $root := index . 0 -}}{{- $g := index . 1 -}}
app.kubernetes.io/name: {{ include "organelle.name" $root }}
app.kubernetes.io/component: {{ $g.name }}
{{- end -}}

{{/* metadata of an object. Call with (list $ name $group-or-nil). */}}
{{- define "organelle.metadata" -}}
{{- $root := index . 0 -}}{{- $name := index . 1 -}}{{- $g := index . 2 -}}
name: {{ $name }}
labels:
  app.kubernetes.io/name: {{ include "organelle.name" $root }}
  {{- if $g }}
  app.kubernetes.io/component: {{ $g.name }}
  {{- end }}
  app.kubernetes.io/managed-by: {{ $root.Release.Service }}
  helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
{{- with $root.Values.namespace }}
namespace: {{ . }}
{{- end }}
{{- end -}}

{{/* hpa, keda, controller (the app's scaling controller) or "" for a group. Call with (list $ $group). */}}
{{- define "organelle.scaler" -}}
{{- $root := index . 0 -}}{{- $g := index . 1 -}}
{{- $choice := $root.Values.autoscaling.autoscaler -}}
{{- if $g.controlled -}}
controller
{{- else if eq $choice "auto" -}}
{{- if or $g.jobs $g.consumerGroups }}keda{{ else }}hpa{{ end -}}
{{- else if ne $choice "none" -}}
{{- $choice -}}
{{- end -}}
{{- end -}}

{{/* A PromQL regex of alternatives: each value's metacharacters escaped. */}}
{{- define "organelle.alternatives" -}}
{{- $quoted := list -}}
{{- range . }}{{ $quoted = append $quoted (regexQuoteMeta . | replace "\\" "\\\\") }}{{ end -}}
{{- join "|" $quoted -}}
{{- end -}}

{{/* A port name for a module: at most 15 characters, no underscores. */}}
{{- define "organelle.portName" -}}
{{- . | replace "_" "-" | trunc 15 | trimSuffix "-" -}}
{{- end -}}
