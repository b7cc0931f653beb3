//! How a model is spoken to: one prompt type ([`Prompt`]) and one renderer ([`ChatTemplate`]).
//!
//! Instruct models expect their turns wrapped in the markup they were trained on. That markup
//! is the model's own Jinja chat template (in the GGUF's `tokenizer.chat_template`, in
//! `tokenizer_config.json`, or in `chat_template.jinja` beside it), rendered here the way
//! transformers renders it. Only a model that ships no template gets a built-in format, chosen
//! from the markup tokens its vocabulary holds, and the loader says so.

use anyhow::{anyhow, Context, Result};
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(text: impl Into<String>) -> Message {
        Message {
            role: Role::System,
            content: text.into(),
        }
    }

    pub fn user(text: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: text.into(),
        }
    }

    pub fn assistant(text: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            content: text.into(),
        }
    }
}

/// What a model is asked: an optional system part and the user's turn. Every prompt in the
/// product (self-edits, answers, judging, ARC) is one of these, rendered by [`ChatTemplate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Prompt {
    pub system: Option<String>,
    pub user: String,
}

impl Prompt {
    pub fn user(text: impl Into<String>) -> Prompt {
        Prompt {
            system: None,
            user: text.into(),
        }
    }

    pub fn messages(&self) -> Vec<Message> {
        let mut out = Vec::with_capacity(2);
        if let Some(s) = &self.system {
            out.push(Message::system(s.clone()));
        }
        out.push(Message::user(self.user.clone()));
        out
    }
}

/// The markup formats built in for models without a template of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinFormat {
    /// `<|im_start|>role\n...<|im_end|>\n` (Qwen2, SmolLM2).
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>` (Llama 3.x instruct).
    Llama3,
    /// No markup: the messages' contents joined by blank lines (base models).
    Plain,
}

impl BuiltinFormat {
    pub fn name(self) -> &'static str {
        match self {
            BuiltinFormat::ChatMl => "chatml",
            BuiltinFormat::Llama3 => "llama3",
            BuiltinFormat::Plain => "plain",
        }
    }

    /// The format a vocabulary's markup tokens point to.
    pub fn from_vocabulary(has_token: &dyn Fn(&str) -> bool) -> BuiltinFormat {
        if has_token("<|im_start|>") {
            BuiltinFormat::ChatMl
        } else if has_token("<|start_header_id|>") {
            BuiltinFormat::Llama3
        } else {
            BuiltinFormat::Plain
        }
    }

    fn render(self, messages: &[Message], generation_prompt: bool) -> String {
        let mut out = String::new();
        match self {
            BuiltinFormat::ChatMl => {
                for m in messages {
                    out.push_str(&format!(
                        "<|im_start|>{}\n{}<|im_end|>\n",
                        m.role.as_str(),
                        m.content
                    ));
                }
                if generation_prompt {
                    out.push_str("<|im_start|>assistant\n");
                }
            }
            BuiltinFormat::Llama3 => {
                out.push_str("<|begin_of_text|>");
                for m in messages {
                    out.push_str(&format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role.as_str(),
                        m.content.trim()
                    ));
                }
                if generation_prompt {
                    out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }
            }
            BuiltinFormat::Plain => {
                let parts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                out.push_str(&parts.join("\n\n"));
                if generation_prompt && !out.is_empty() {
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The special tokens a template may refer to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
}

#[derive(Clone)]
enum Renderer {
    Jinja(Arc<Environment<'static>>),
    Builtin(BuiltinFormat),
}

/// How one model's conversations are written.
#[derive(Clone)]
pub struct ChatTemplate {
    renderer: Renderer,
    /// The model's own template, as shipped (kept to save merged models with it).
    source: Option<String>,
    special: SpecialTokens,
    /// What closes an assistant turn, learnt by rendering a probe conversation.
    end_of_turn: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChatTemplate({})", self.describe())
    }
}

const TEMPLATE_NAME: &str = "chat";
const PROBE_REPLY: &str = "PROBE-REPLY-7f3a";

impl ChatTemplate {
    /// The model's own template. An unreadable template is an error naming where it came from.
    pub fn from_jinja(source: &str, special: SpecialTokens, origin: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // transformers renders chat templates with these settings; without them the
        // whitespace around `{% %}` tags differs and so do the tokens.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| anyhow!("{e}"))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| -> String {
            chrono::Utc::now().format(&format).to_string()
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .with_context(|| format!("{origin}: the chat template is not valid Jinja"))?;
        let mut template = ChatTemplate {
            renderer: Renderer::Jinja(Arc::new(env)),
            source: Some(source.to_string()),
            special,
            end_of_turn: String::new(),
        };
        template.end_of_turn = template
            .probe_end_of_turn()
            .with_context(|| format!("{origin}: the chat template cannot be rendered"))?;
        Ok(template)
    }

    pub fn builtin(format: BuiltinFormat) -> ChatTemplate {
        let mut template = ChatTemplate {
            renderer: Renderer::Builtin(format),
            source: None,
            special: SpecialTokens::default(),
            end_of_turn: String::new(),
        };
        template.end_of_turn = template.probe_end_of_turn().unwrap_or_default();
        template
    }

    /// The model's template as shipped, if it had one.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// `jinja` for the model's own template, else the built-in format's name.
    pub fn describe(&self) -> String {
        match &self.renderer {
            Renderer::Jinja(_) => "jinja".to_string(),
            Renderer::Builtin(f) => format!("built-in {}", f.name()),
        }
    }

    /// Whether the model takes turns at all (a base model continues plain text).
    pub fn is_chat(&self) -> bool {
        !matches!(self.renderer, Renderer::Builtin(BuiltinFormat::Plain))
    }

    /// A conversation in the model's markup; with `generation_prompt`, it ends where the
    /// assistant's reply begins.
    pub fn render(&self, messages: &[Message], generation_prompt: bool) -> Result<String> {
        match &self.renderer {
            Renderer::Builtin(f) => Ok(f.render(messages, generation_prompt)),
            Renderer::Jinja(env) => {
                let messages: Vec<Value> = messages
                    .iter()
                    .map(|m| {
                        minijinja::context! { role => m.role.as_str(), content => m.content.clone() }
                    })
                    .collect();
                let ctx = minijinja::context! {
                    messages => messages,
                    add_generation_prompt => generation_prompt,
                    bos_token => self.special.bos.clone().unwrap_or_default(),
                    eos_token => self.special.eos.clone().unwrap_or_default(),
                };
                env.get_template(TEMPLATE_NAME)
                    .and_then(|t| t.render(ctx))
                    .map_err(|e| anyhow!("the chat template failed: {e:#}"))
            }
        }
    }

    /// The text of a prompt, ending where the reply begins. A base model gets the prompt and a
    /// line to write on.
    pub fn prompt(&self, prompt: &Prompt) -> Result<String> {
        let messages = prompt.messages();
        if self.is_chat() {
            self.render(&messages, true)
        } else {
            let mut s = self.render(&messages, false)?;
            s.push('\n');
            Ok(s)
        }
    }

    /// The text that closes an assistant turn, appended to training completions so the model
    /// learns to stop (empty for a base model).
    pub fn end_of_turn(&self) -> &str {
        &self.end_of_turn
    }

    /// Strings that end generation even when the tokenizer does not list them as EOS.
    pub fn stop_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.end_of_turn.is_empty() {
            out.push(self.end_of_turn.clone());
        }
        if let Some(eos) = &self.special.eos {
            if !eos.is_empty() && !out.contains(eos) {
                out.push(eos.clone());
            }
        }
        out
    }

    /// Renders a one-exchange conversation and reads off what follows the assistant's text.
    fn probe_end_of_turn(&self) -> Result<String> {
        let text = self.render(
            &[
                Message::user("PROBE-QUESTION"),
                Message::assistant(PROBE_REPLY),
            ],
            false,
        )?;
        let Some(at) = text.rfind(PROBE_REPLY) else {
            return Ok(String::new());
        };
        Ok(text[at + PROBE_REPLY.len()..].trim_end().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// Qwen2.5's template (tools part shortened): `-` whitespace control, `.startswith`-free.
    const QWEN_TEMPLATE: &str = "{%- if tools %}{{- 'tools' }}{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";

    /// Llama 3.2's template, abridged: bos_token, strftime_now, raise_exception, `| trim`.
    const LLAMA_TEMPLATE: &str = "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = strftime_now(\"%d %b %Y\") %}\n{%- endif %}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n{%- for message in messages %}\n    {%- if message.role not in ['user', 'assistant'] %}{{- raise_exception('bad role') }}{%- endif %}\n    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n";

    fn special() -> SpecialTokens {
        SpecialTokens {
            bos: Some("<|begin_of_text|>".into()),
            eos: Some("<|eot_id|>".into()),
        }
    }

    #[test]
    fn smollm2_template_renders_its_default_system() {
        let t = ChatTemplate::from_jinja(SMOLLM2_TEMPLATE, SpecialTokens::default(), "t").unwrap();
        assert_eq!(
            t.prompt(&Prompt::user("Hi")).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_system = Prompt {
            system: Some("S".into()),
            user: "Hi".into(),
        };
        assert_eq!(
            t.render(&with_system.messages(), false).unwrap(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
        assert_eq!(t.end_of_turn(), "<|im_end|>");
        assert!(t.is_chat());
    }

    #[test]
    fn qwen_template_with_whitespace_control() {
        let t = ChatTemplate::from_jinja(QWEN_TEMPLATE, SpecialTokens::default(), "t").unwrap();
        assert_eq!(
            t.prompt(&Prompt::user("Hi")).unwrap(),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(t.end_of_turn(), "<|im_end|>");
    }

    #[test]
    fn llama_template_with_functions_and_filters() {
        let t = ChatTemplate::from_jinja(LLAMA_TEMPLATE, special(), "t").unwrap();
        let text = t.prompt(&Prompt::user(" Hi ")).unwrap();
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(t.end_of_turn(), "<|eot_id|>");
        let err = t
            .render(
                &[
                    Message {
                        role: Role::System,
                        content: "a".into(),
                    },
                    Message {
                        role: Role::System,
                        content: "b".into(),
                    },
                ],
                true,
            )
            .unwrap_err();
        assert!(format!("{err:#}").contains("bad role"), "{err:#}");
    }

    #[test]
    fn broken_templates_are_errors_that_name_their_origin() {
        let err =
            ChatTemplate::from_jinja("{% for %}", SpecialTokens::default(), "m.gguf").unwrap_err();
        assert!(format!("{err:#}").contains("m.gguf"), "{err:#}");
    }

    #[test]
    fn builtins_for_models_without_a_template() {
        let chatml = ChatTemplate::builtin(BuiltinFormat::ChatMl);
        assert_eq!(
            chatml.prompt(&Prompt::user("Hi")).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(chatml.end_of_turn(), "<|im_end|>");
        let llama = ChatTemplate::builtin(BuiltinFormat::Llama3);
        assert_eq!(llama.end_of_turn(), "<|eot_id|>");
        let plain = ChatTemplate::builtin(BuiltinFormat::Plain);
        assert!(!plain.is_chat());
        assert_eq!(
            plain
                .prompt(&Prompt {
                    system: Some("A".into()),
                    user: "B".into()
                })
                .unwrap(),
            "A\n\nB\n"
        );
        assert_eq!(plain.end_of_turn(), "");
        let has = |t: &str| t == "<|start_header_id|>";
        assert_eq!(BuiltinFormat::from_vocabulary(&has), BuiltinFormat::Llama3);
    }
}
