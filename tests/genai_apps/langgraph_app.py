"""A LangGraph agent with a tool loop through langchain-openai, traced by OpenLLMetry's
LangChain instrumentation; settings from the standard OTEL_* environment variables.

    python langgraph_app.py BASE_URL THREAD_ID
"""

import os
import sys
from typing import Annotated, Any, TypedDict

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
LangchainInstrumentor().instrument()
if os.environ.get("TOKENTOP_ALSO_OPENAI"):  # both layers traced, as auto-instrumentation does
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()


@tool
def search_sources(query: str) -> str:
    """Search the research sources."""
    return "no new sources"


base_url, thread = sys.argv[1], sys.argv[2]
llm = ChatOpenAI(model="gpt-4o-mini", base_url=base_url, api_key="sk-test")
model = llm.bind_tools([search_sources])


class State(TypedDict):
    messages: Annotated[list[Any], add_messages]


def agent(state: State) -> dict[str, Any]:
    return {"messages": [model.invoke(state["messages"])]}


graph = StateGraph(State)
graph.add_node("agent", agent)
graph.add_node("tools", ToolNode([search_sources]))
graph.add_edge(START, "agent")
graph.add_conditional_edges("agent", tools_condition)
graph.add_edge("tools", "agent")
app = graph.compile()
app.invoke(
    {"messages": [HumanMessage("draft the memo")]},
    config={"configurable": {"thread_id": thread}, "recursion_limit": 100},
)
provider.shutdown()
print("done", flush=True)
