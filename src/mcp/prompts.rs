//! The one prompt the server offers: answer a question from the database,
//! with the tables and columns already in the message so the model can
//! write SQL at once (only the tables the caller may read).

use rmcp::model::{
    GetPromptRequestParams, GetPromptResult, Prompt, PromptArgument, PromptMessage, Role,
};
use rmcp::ErrorData;

use std::sync::Arc;

use super::ServedDatabase;
use crate::engine::TableDetail;
use crate::policy::Restrictions;

pub const ANSWER_QUESTION: &str = "answer_question";

pub fn answer_question() -> Prompt {
    Prompt::new(
        ANSWER_QUESTION,
        Some("Answer a question from the database: the prompt carries the tables and columns, and how to use the tools."),
        Some(vec![PromptArgument::new("question")
            .with_description("The question to answer from the data.")
            .with_required(true)]),
    )
}

pub async fn get(
    db: &ServedDatabase,
    restrictions: &Arc<Restrictions>,
    request: GetPromptRequestParams,
) -> Result<GetPromptResult, ErrorData> {
    if request.name != ANSWER_QUESTION {
        return Err(ErrorData::invalid_params(
            format!(
                "no prompt named {:?}; the only one is {ANSWER_QUESTION}",
                request.name
            ),
            None,
        ));
    }
    let question = request
        .arguments
        .as_ref()
        .and_then(|args| args.get("question"))
        .and_then(|q| q.as_str())
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ErrorData::invalid_params("the argument `question` is required", None))?;
    let tables = db
        .engine
        .list_tables_for(restrictions, None, None, TableDetail::Columns)
        .await
        .map(|list| db.dictionary.annotate_list(list))
        .map_err(|err| ErrorData::internal_error(format!("cannot read the schema: {err}"), None))?;
    let mut schema = String::new();
    for table in &tables.tables {
        let columns = table.columns.as_deref().unwrap_or_default().join(", ");
        let rows = table
            .rows
            .map(|n| format!(", {n} rows"))
            .unwrap_or_default();
        schema.push_str(&format!(
            "- {} ({}{rows}): {columns}\n",
            table.name, table.kind
        ));
    }
    let text = format!(
        "Answer this question from the SQLite database: {question}\n\n\
         Tables:\n{schema}\n\
         Use describe_table for keys and indexes, explain_query to check a plan, and query to run one \
         read-only statement at a time, binding values with params. Say which query produced each number."
    );
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description("Answer a question from the database"),
    )
}
