//! The dataset back to the JSON tree of its file format (`PersonaDataset::to_json` writes it; the
//! round trip through the reader is tested).

use crate::json::Json;
use crate::model::{CategoryMeta, PersonaDataset, PromptItem, PromptText, VerificationPrompt};

pub(crate) fn to_tree(dataset: &PersonaDataset) -> Json {
    let mut root = Vec::new();
    let metas: Vec<(String, Json)> = dataset
        .categories
        .iter()
        .filter_map(|category| Some((category.name.clone(), meta_tree(category.meta.as_ref()?))))
        .collect();
    if !metas.is_empty() {
        root.push(("categories".to_owned(), Json::Object(metas)));
    }
    let categories = dataset
        .categories
        .iter()
        .map(|category| {
            let items = category.items.iter().map(item_tree).collect();
            (category.name.clone(), Json::Array(items))
        })
        .collect();
    root.push(("prompt_pairs".to_owned(), Json::Object(categories)));
    if !dataset.verification_prompts.is_empty() {
        let prompts = dataset
            .verification_prompts
            .iter()
            .map(verification_tree)
            .collect();
        root.push(("verification_prompts".to_owned(), Json::Array(prompts)));
    }
    Json::Object(root)
}

fn strings<'a>(names: impl IntoIterator<Item = &'a String>) -> Json {
    Json::Array(names.into_iter().map(|name| Json::string(name)).collect())
}

fn meta_tree(meta: &CategoryMeta) -> Json {
    let mut members = Vec::new();
    if let Some(description) = &meta.description {
        members.push(("description".to_owned(), Json::string(description)));
    }
    if let Some(variants) = &meta.variants {
        members.push(("variants".to_owned(), strings(variants)));
    }
    if let Some((positive, negative)) = &meta.contrast {
        members.push(("contrast".to_owned(), strings([positive, negative])));
    }
    if let Some(baseline) = &meta.baseline {
        members.push(("baseline".to_owned(), Json::string(baseline)));
    }
    Json::Object(members)
}

fn item_tree(item: &PromptItem) -> Json {
    let mut members = vec![
        ("id".to_owned(), Json::string(&item.id)),
        ("topic".to_owned(), Json::string(&item.topic)),
    ];
    if !item.tags.is_empty() {
        members.push(("tags".to_owned(), strings(&item.tags)));
    }
    for variant in &item.variants {
        members.push((
            variant.name.clone(),
            Json::Object(prompt_members(&variant.prompt)),
        ));
    }
    if let Some(continuations) = &item.continuations {
        let pair = vec![
            ("agree".to_owned(), Json::string(&continuations.agree)),
            ("correct".to_owned(), Json::string(&continuations.correct)),
        ];
        members.push(("continuations".to_owned(), Json::Object(pair)));
    }
    Json::Object(members)
}

fn prompt_members(prompt: &PromptText) -> Vec<(String, Json)> {
    match prompt {
        PromptText::Single(text) => vec![("prompt".to_owned(), Json::string(text))],
        PromptText::Turns(turns) => {
            let turns = turns
                .iter()
                .map(|turn| {
                    Json::Object(vec![
                        ("role".to_owned(), Json::string(turn.role.as_str())),
                        ("content".to_owned(), Json::string(&turn.content)),
                    ])
                })
                .collect();
            vec![("turns".to_owned(), Json::Array(turns))]
        }
    }
}

fn verification_tree(prompt: &VerificationPrompt) -> Json {
    let mut members = vec![("expected".to_owned(), Json::string(prompt.expected.label()))];
    if let Some(probe) = &prompt.probe {
        members.push(("probe".to_owned(), Json::string(probe)));
    }
    if let Some(set) = &prompt.set {
        members.push(("set".to_owned(), Json::string(set)));
    }
    members.extend(prompt_members(&prompt.prompt));
    Json::Object(members)
}
