"""Chat templates: Ollama's Go templates, GGUF Jinja templates, tool calls and thinking tags.

Pure and synchronous: no I/O and no trio, so the daemon and tests call it directly.

* :class:`ChatTemplate` renders a model's Go TEMPLATE with Ollama's semantics.
* :class:`JinjaChatTemplate` renders a GGUF ``tokenizer.chat_template`` when there is none.
* :class:`ToolParser` and :class:`ThinkingParser` split streamed model output.
* Every failure raises :class:`TemplateError` (a ValueError).
"""

from ollamad.prompt.errors import TemplateError
from ollamad.prompt.goruntime import Limits
from ollamad.prompt.gotemplate import GoTemplate
from ollamad.prompt.jinja import JinjaChatTemplate, jinja_capabilities
from ollamad.prompt.render import (
    DEFAULT_TEMPLATE,
    ChatTemplate,
    Values,
    generate_messages,
    tag_images,
)
from ollamad.prompt.thinking import ThinkingParser, infer_tags
from ollamad.prompt.tools import ToolParser, parse_tag, tool_call_id

__all__ = [
    "DEFAULT_TEMPLATE",
    "ChatTemplate",
    "GoTemplate",
    "JinjaChatTemplate",
    "Limits",
    "TemplateError",
    "ThinkingParser",
    "ToolParser",
    "Values",
    "generate_messages",
    "infer_tags",
    "jinja_capabilities",
    "parse_tag",
    "tag_images",
    "tool_call_id",
]
