//! Chat formatting. Instruct models expect their turns wrapped in the markup they were trained
//! on; base models get plain text. The format is recognised from the model's chat template.

use serde::{Deserialize, Serialize};

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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChatFormat {
    /// `<|im_start|>role\n...<|im_end|>\n` (Qwen2, SmolLM2). Some templates insert a default
    /// system message when the conversation has none.
    ChatMl { default_system: Option<String> },
    /// `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>` (Llama 3.x instruct).
    Llama3,
    /// No markup: the messages' contents joined by blank lines (base models).
    Plain,
}

impl ChatFormat {
    /// Recognises the format from a Jinja chat template (or its absence).
    pub fn from_template(template: Option<&str>) -> ChatFormat {
        match template {
            Some(t) if t.contains("<|im_start|>") => ChatFormat::ChatMl {
                default_system: chatml_default_system(t),
            },
            Some(t) if t.contains("<|start_header_id|>") => ChatFormat::Llama3,
            _ => ChatFormat::Plain,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ChatFormat::ChatMl { .. } => "chatml",
            ChatFormat::Llama3 => "llama3",
            ChatFormat::Plain => "plain",
        }
    }

    pub fn is_chat(&self) -> bool {
        !matches!(self, ChatFormat::Plain)
    }

    /// The prompt text for a conversation; with `generation_prompt`, it ends where the
    /// assistant's reply should begin.
    pub fn render(&self, messages: &[Message], generation_prompt: bool) -> String {
        let mut out = String::new();
        match self {
            ChatFormat::ChatMl { default_system } => {
                let has_system = messages.first().map(|m| m.role) == Some(Role::System);
                if let (false, Some(sys)) = (has_system, default_system) {
                    out.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
                }
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
            ChatFormat::Llama3 => {
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
            ChatFormat::Plain => {
                let parts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                out.push_str(&parts.join("\n\n"));
                if generation_prompt && !out.is_empty() {
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The text that closes an assistant turn, appended to training completions so the model
    /// learns to stop.
    pub fn end_of_turn(&self) -> &'static str {
        match self {
            ChatFormat::ChatMl { .. } => "<|im_end|>",
            ChatFormat::Llama3 => "<|eot_id|>",
            ChatFormat::Plain => "",
        }
    }

    /// Markup that ends generation even when the tokenizer does not list it as EOS.
    pub fn stop_strings(&self) -> Vec<String> {
        match self {
            ChatFormat::ChatMl { .. } => vec!["<|im_end|>".into(), "<|im_start|>".into()],
            ChatFormat::Llama3 => vec!["<|eot_id|>".into(), "<|start_header_id|>".into()],
            ChatFormat::Plain => vec![],
        }
    }
}

/// Finds the literal system message a ChatML template inserts when the conversation has none.
fn chatml_default_system(template: &str) -> Option<String> {
    for marker in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
        let mut rest = template;
        while let Some(at) = rest.find(marker) {
            let after = &rest[at + marker.len()..];
            if let Some(end) = after.find("<|im_end|>") {
                let body = &after[..end];
                // A body with template code is the user's own system message, not a default.
                if !body.contains("{{") && !body.contains("{%") && !body.contains('\'') {
                    return Some(body.replace("\\n", "\n"));
                }
            }
            rest = after;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_default_system() {
        let f = ChatFormat::from_template(Some(SMOLLM2_TEMPLATE));
        assert_eq!(
            f,
            ChatFormat::ChatMl {
                default_system: Some(
                    "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into()
                )
            }
        );
        let text = f.render(&[Message::user("Hi")], true);
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let text = f.render(&[Message::system("S"), Message::user("Hi")], false);
        assert_eq!(
            text,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn qwen_style_escaped_newlines() {
        let t = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}";
        assert_eq!(
            ChatFormat::from_template(Some(t)),
            ChatFormat::ChatMl {
                default_system: Some(
                    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".into()
                )
            }
        );
    }

    #[test]
    fn llama3_and_plain() {
        let f = ChatFormat::from_template(Some("{{ '<|start_header_id|>' }}"));
        assert_eq!(f, ChatFormat::Llama3);
        assert_eq!(
            f.render(&[Message::user("Hi")], true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let p = ChatFormat::from_template(None);
        assert_eq!(
            p.render(&[Message::system("A"), Message::user("B")], true),
            "A\n\nB\n"
        );
    }
}
